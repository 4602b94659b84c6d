"""A tqdm progress bar over training steps, showing the latest loss, probe accuracy and effective rank."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from mmae.callbacks import Callback, RunInfo, TrainResult

_SHOWN = {"train/loss": "loss", "probe/online_top1": "probe", "info/erank": "erank"}


class ProgressBar(Callback):
    """Advances one tick per optimizer step; status messages are printed above the bar."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._shown: dict[str, str] = {}

    def on_train_start(self, info: RunInfo) -> None:
        self._bar = tqdm(total=info.total_steps, initial=info.start_step, unit="step", dynamic_ncols=True)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self._bar is None:
            return
        shown = {short: f"{metrics[name]:.4g}" for name, short in _SHOWN.items() if name in metrics}
        self._shown.update(shown)
        self._bar.set_postfix(self._shown, refresh=False)
        self._bar.update(max(0, step - self._bar.n))

    def on_status(self, message: str, details: dict[str, Any] | None = None) -> None:
        tqdm.write(message)

    def on_train_end(self, result: TrainResult) -> None:
        if self._bar is not None:
            self._bar.close()
