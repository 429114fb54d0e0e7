"""What a run shows the user as it goes: its start-up line, and a tqdm progress bar over its
steps with loss, accuracy and images per second."""
from typing import Optional

import jax
from tqdm.auto import tqdm


def startup_line(model_name: str, data_source: str, init_from: Optional[str],
                 resumed_from: Optional[str]) -> str:
  """The one line a run logs at start: model, data and where it came from, the initial
  weights (a checkpoint resumed, a pretrained file, or from scratch) and the devices."""
  if resumed_from is not None:
    weights_from = f'resumed from checkpoint {resumed_from}'
  elif init_from:
    weights_from = f'pretrained weights from {init_from}'
  else:
    weights_from = 'from scratch (random initialisation)'
  devices = jax.devices()
  hosts = f' on {jax.process_count()} processes' if jax.process_count() > 1 else ''
  return (f'model {model_name}; data: {data_source}; initial weights: {weights_from}; '
          f'devices: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}){hosts}')


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
