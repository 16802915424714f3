"""Draw docs/template.png: the canonical 68-point template at 224 px, the split row, an aligned face."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from antimask.config import load_config  # noqa: E402
from antimask.faces import align, finder  # noqa: E402
from antimask.data.sample import portraits  # noqa: E402


def main(out: Path = Path(__file__).with_name("template.png")) -> None:
    image = portraits()["astronaut"]
    box = finder.run_detector(image, "hog", load_config().prepare)[0].box
    aligned, _, _, _ = align.align_face(image, finder.landmarks_68(image, box), 224)
    t = align.template(224)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    for ax, show_face in zip(axes, (False, True)):
        if show_face:
            ax.imshow(aligned)
        else:
            ax.imshow(aligned * 0 + 255)
        upper = [i for i in range(68) if i not in align.LOWER_POINTS]
        ax.scatter(t[upper, 0], t[upper, 1], s=9, c="tab:blue", label="upper points (kept visible)")
        ax.scatter(t[align.LOWER_POINTS, 0], t[align.LOWER_POINTS, 1], s=9, c="tab:red", label="lower points (drawn)")
        ax.axhline(96, color="k", lw=1.2, ls="--")
        ax.text(2, 92, "split row 96", fontsize=8)
        ax.set_xlim(0, 224)
        ax.set_ylim(224, 0)
        ax.set_xticks([0, 112, 224])
        ax.set_yticks([0, 72, 96, 206, 224])
    axes[0].set_title("template (224 x 224)")
    axes[1].set_title("an aligned face")
    axes[0].legend(loc="lower center", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main()
