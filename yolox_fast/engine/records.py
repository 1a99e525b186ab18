"""What a run leaves behind and shows: progress bar or log lines, results.csv, TensorBoard, a PNG of curves.

Only rank 0 creates these objects; the other processes get the silent :class:`NullRecorder`.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import os
import sys
import warnings
from pathlib import Path

from ..files.atomic import atomic_write

#: Loss terms shown in the bar and written to results.csv, in this order.
LOSS_KEYS = ("total_loss", "iou_loss", "l1_loss", "conf_loss", "cls_loss", "num_fg")
_SHORT = {"total_loss": "loss", "iou_loss": "iou", "l1_loss": "l1", "conf_loss": "obj", "cls_loss": "cls",
          "num_fg": "fg"}
CSV_COLUMNS = ("epoch", *LOSS_KEYS, "lr", "images_per_s", "epoch_time_s", "AP", "AP50", "AP75")


def format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class EpochProgress:
    """One epoch's progress: a tqdm bar, or (``bar=False``) plain log lines.

    ``tick()`` after every iteration moves the bar; ``update(done, losses, lr, images_per_s,
    input_size, eta_s)``, called every log interval and at the end of the epoch, refreshes the
    numbers or writes a line (reading the losses is a host sync on GPUs, hence not every iteration).
    """

    def __init__(self, epoch: int, epochs: int, total_iters: int, bar: bool, write):
        self.epoch, self.epochs, self.total = epoch, epochs, total_iters
        self.write = write
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_iters, desc=f"epoch {epoch + 1}/{epochs}", unit="it", dynamic_ncols=True,
                            leave=True, file=sys.stderr)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def update(self, done: int, losses: dict[str, float], lr: float, images_per_s: float, input_size: int,
               eta_s: float) -> None:
        if self.bar is not None:
            post = {_SHORT[k]: f"{losses[k]:.3f}" for k in LOSS_KEYS if k in losses}
            post.update(lr=f"{lr:.2e}", size=input_size, img_s=f"{images_per_s:.1f}", eta=format_duration(eta_s))
            self.bar.set_postfix(post, refresh=True)
        else:
            terms = " ".join(f"{_SHORT[k]} {losses[k]:.3f}" for k in LOSS_KEYS if k in losses)
            self.write(f"epoch {self.epoch + 1}/{self.epochs} iter {done}/{self.total} | {terms} | lr {lr:.3e} | "
                       f"size {input_size} | {images_per_s:.1f} img/s | eta {format_duration(eta_s)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Recorder:
    """Rank 0's records of a run in ``output_dir``: ``train.log``, ``results.csv``, TensorBoard, ``results.png``."""

    def __init__(self, output_dir: str | os.PathLike, progress: bool = True, tensorboard: bool = True):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.csv_path = self.dir / "results.csv"
        self.plot_path = self.dir / "results.png"
        self._log_file = open(self.dir / "train.log", "a", buffering=1)
        self._bar: EpochProgress | None = None
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.dir / "tensorboard"))
            except ImportError as exc:  # tensorboard is optional at run time
                self.log(f"TensorBoard disabled: {exc}")

    # -- messages ---------------------------------------------------------------------------------------
    def log(self, message: str, console: bool = True) -> None:
        """Append to ``train.log`` and (unless ``console=False``) print, above the bar if one is shown."""
        if not console:
            pass
        elif self._bar is not None and self._bar.bar is not None:
            self._bar.bar.write(message, file=sys.stderr)
        else:
            print(message, flush=True)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self._log_file.write(f"{stamp} {message}\n")

    # -- per epoch / per log interval -------------------------------------------------------------------
    def start_epoch(self, epoch: int, epochs: int, total_iters: int) -> EpochProgress:
        self._bar = EpochProgress(epoch, epochs, total_iters, self.progress, self.log)
        return self._bar

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        if self.tb is not None:
            for k, v in values.items():
                if v is not None and math.isfinite(v):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def write_row(self, row: dict) -> None:
        """Add (or replace) the row of ``row["epoch"]`` in results.csv; rows of later epochs are dropped.

        Rewriting the whole small file keeps it consistent after a resume from an earlier epoch.
        """
        rows = [r for r in read_results(self.csv_path) if int(r["epoch"]) < int(row["epoch"])]
        rows.append({k: _cell(row.get(k)) for k in CSV_COLUMNS})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.csv_path, lambda f: f.write(buf.getvalue().encode()))

    def plot(self) -> Path | None:
        """Write results.png from results.csv; returns its path (None when there is nothing to plot)."""
        rows = read_results(self.csv_path)
        if not rows:
            return None
        plot_results(rows, self.plot_path)
        return self.plot_path

    def close(self) -> None:
        self.end_epoch()
        if self.tb is not None:
            self.tb.close()
        self._log_file.close()


class NullRecorder:
    """What the processes other than rank 0 record: nothing."""

    csv_path = plot_path = None

    def log(self, message: str, console: bool = True) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, total_iters: int) -> None:
        return None

    def end_epoch(self) -> None:
        pass

    def scalars(self, values, step, prefix) -> None:
        pass

    def write_row(self, row) -> None:
        pass

    def plot(self) -> None:
        return None

    def close(self) -> None:
        pass


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_results(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a results.csv (empty list when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_results(rows: list[dict[str, str]], png_path: str | os.PathLike) -> None:
    """Loss curves (left) and mAP curves (right) against the epoch, saved as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    def column(name):
        return [float(r[name]) if r.get(name) not in (None, "") else math.nan for r in rows]

    epochs = column("epoch")
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4))
    for key in LOSS_KEYS[:-1]:
        values = column(key)
        if any(v > 0 for v in values if math.isfinite(v)):
            ax_loss.plot(epochs, values, marker=".", label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss (epoch mean)", title="training loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    for key in ("AP", "AP50", "AP75"):
        points = [(e, v) for e, v in zip(epochs, column(key), strict=False) if math.isfinite(v)]
        if points:
            ax_ap.plot(*zip(*points, strict=False), marker="o", label=key)
    ax_ap.set(xlabel="epoch", ylabel="COCO AP", title="validation mAP")
    if ax_ap.lines:
        ax_ap.legend()
    ax_ap.grid(alpha=0.3)
    fig.tight_layout()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(png_path, dpi=100)
    plt.close(fig)
