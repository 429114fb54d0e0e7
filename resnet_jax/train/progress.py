"""A tqdm progress bar over the run's steps, showing loss, accuracy and images per second."""
from typing import Optional

from tqdm.auto import tqdm


class ProgressBar:
  """Advances by chunks of steps; the postfix changes only when metrics are logged."""

  def __init__(self, total_steps: int, initial_step: int, enabled: bool = True):
    self._bar: Optional[tqdm] = None
    if enabled:
      self._bar = tqdm(total=total_steps, initial=initial_step, unit='step', dynamic_ncols=True,
                       desc='train')

  def advance(self, steps: int) -> None:
    if self._bar is not None:
      self._bar.update(steps)

  def show(self, loss: float, accuracy: float, images_per_sec: float) -> None:
    if self._bar is not None:
      self._bar.set_postfix(loss=f'{loss:.4f}', acc=f'{accuracy:.3f}',
                            img_s=f'{images_per_sec:.1f}', refresh=False)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
