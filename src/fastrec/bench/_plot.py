"""PNG chart of a ``fastrec bench`` run (matplotlib, the optional extra ``plot``)."""

from __future__ import annotations

from pathlib import Path


def speedup_chart(rows, path: Path, cpu: str, n_threads: int) -> Path:
    """One horizontal bar panel per case: each implementation's speed-up against the case's
    baseline (and, where the case has one, its fraction of the read floor). Raises ImportError
    without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r.case for r in rows))
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 1.3 + 1.0 * len(rows) / 2), squeeze=False)
    for ax, case in zip(axes[:, 0], cases):
        mine = [r for r in rows if r.case == case and r.speedup is not None]
        labels = [r.impl for r in mine]
        values = [r.speedup for r in mine]
        bars = ax.barh(labels, values, color=["C0" if v >= 1 else "C3" for v in values])
        for bar, r in zip(bars, mine):
            text = f"{r.speedup:.2f}x" + (
                "" if r.of_floor is None else f"  ({r.of_floor:.2f} of read)"
            )
            ax.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                " " + text,
                va="center",
                fontsize=8,
            )
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_title(case, fontsize=9, loc="left")
        ax.invert_yaxis()
        ax.set_xlim(0, max(values) * 1.35 if values else 1)
        ax.tick_params(labelsize=8)
    fig.suptitle(
        f"fastrec bench: speed-up against the baseline (same run)\n{cpu}, {n_threads} threads",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
