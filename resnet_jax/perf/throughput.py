"""Throughput records (from resnet_jax.perf.benchmarking) as a markdown table and a plot.

The plot is drawn in the library's one style (resnet_jax.plot_style: a Figure, no pyplot),
so the caller's backend and pyplot's state are left alone.
"""
import os
import shutil
import tempfile

from resnet_jax import plot_style, storage

_COLUMNS = (
    ('path', 'path', '{}'),
    ('batch_size', 'batch', '{}'),
    ('steps_per_dispatch', 'steps/dispatch', '{}'),
    ('img_per_sec', 'img/s', '{:,.1f}'),
    ('ms_per_step', 'ms/step', '{:,.1f}'),
    ('achieved_tflops', 'TFLOP/s', '{:.3f}'),
    ('fraction_of_peak', 'of peak', '{:.1%}'),
    ('peak_memory_bytes', 'peak memory (MiB)', None),
    ('speedup_vs_baseline', 'speed-up vs baseline', '{:.2f}x'),
)


def _cell(record: dict, key: str, form) -> str:
  value = record.get(key)
  if value is None:
    return '-'
  if key == 'peak_memory_bytes':
    return f'{value / 2**20:,.0f}'
  return form.format(value)


def throughput_table(records: list[dict]) -> str:
  """A markdown table, one row per record, in batch-size order; '-' where not measured."""
  ordered = sorted(records, key=lambda r: (r['batch_size'], r['path']))
  lines = ['| ' + ' | '.join(title for _, title, _ in _COLUMNS) + ' |',
           '|' + '|'.join('---' for _ in _COLUMNS) + '|']
  for record in ordered:
    lines.append('| ' + ' | '.join(_cell(record, key, form) for key, _, form in _COLUMNS) + ' |')
  return '\n'.join(lines) + '\n'


def describe_setting(record: dict) -> str:
  """One line naming what was measured and where (shared by every record of a sweep)."""
  device = record['device']
  return (f"{record['model']} ({record['layout']}), {record['image_size']}x"
          f"{record['image_size']}, {record['dtype']}, {record['optimizer']}; "
          f"{device['count']} x {device['kind']} ({record['backend']}), jax "
          f"{record['jax_version']}")


def plot_throughput(records: list[dict], path: str) -> None:
  """Images per second against batch size, one line per path; written atomically (PNG)."""
  with plot_style.style():
    fig, axes = plot_style.new_figure(1, 1, 6.4, 4.2)
    ax = axes[0][0]
    for index, name in enumerate(sorted({r['path'] for r in records})):
      points = sorted((r['batch_size'], r['img_per_sec']) for r in records
                      if r['path'] == name)
      ax.plot([p[0] for p in points], [p[1] for p in points], label=name,
              **plot_style.curve_style(index))
    ax.set_xscale('log', base=2)
    ax.set_xlabel('global batch size (images per step)')
    ax.set_ylabel('training images / second')
    ax.set_title(describe_setting(records[0]), fontsize=8)
    ax.legend()
    plot_style.save(fig, path)


def write_sweep(records: list[dict], out_dir: str) -> dict:
  """Writes sweep.md (the table) and sweep.png (the plot) into out_dir; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {'table': os.path.join(out_dir, 'sweep.md'), 'plot': os.path.join(out_dir, 'sweep.png')}
  text = f'Training throughput: {describe_setting(records[0])}\n\n' + throughput_table(records)
  storage.write_text_atomic(paths['table'], text)
  plot_throughput(records, paths['plot'])
  return paths


def check_out_dir(out_dir: str) -> None:
  """StorageError naming `out_dir` (storage.write_error: what the OS said, the free space)
  unless write_sweep can write there: a directory is made and removed at once where the
  sweep's files go, or in the nearest existing parent of `out_dir` that does not exist yet.
  Meant before measuring, so that minutes of measurements are not lost to a read-only or
  full disk; nothing is left behind."""
  where = os.path.abspath(out_dir)
  while not os.path.isdir(where) and os.path.dirname(where) != where:
    where = os.path.dirname(where)
  try:
    shutil.rmtree(tempfile.mkdtemp(dir=where, prefix='.write-check-'))
  except OSError as error:
    if not storage.is_write_failure(error):
      raise
    raise storage.write_error(out_dir, error) from error
