"""What a throughput record is compared with: datasheet peaks, XLA's cost of a compiled
program, and the memory a device reports."""
from typing import Optional

# Dense (no structured sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets,
# which list them "with sparsity": the figures here are half of those. float32 is
# compared with the TF32 peak, the most a float32 convolution can reach on these parts.
# First matching device-kind substring wins, so the specific names come first.
PEAK_TFLOPS = (
    ('H100 PCIe', {'bfloat16': 756.5, 'float32': 378.0}, 'NVIDIA H100 PCIe datasheet'),
    ('H100 NVL', {'bfloat16': 835.5, 'float32': 417.5}, 'NVIDIA H100 NVL datasheet'),
    ('H200 NVL', {'bfloat16': 835.5, 'float32': 417.5}, 'NVIDIA H200 NVL datasheet'),
    ('H200', {'bfloat16': 989.4, 'float32': 494.7}, 'NVIDIA H200 SXM datasheet'),
    ('H100', {'bfloat16': 989.4, 'float32': 494.7}, 'NVIDIA H100 SXM5 datasheet'),
    ('A100', {'bfloat16': 312.0, 'float32': 156.0}, 'NVIDIA A100 datasheet'),
)


def peak_tflops(device_kind: str, dtype: str) -> tuple[Optional[float], Optional[str]]:
  """(peak TFLOP/s, where the figure comes from) for a device kind; (None, None) if unknown."""
  for pattern, peaks, source in PEAK_TFLOPS:
    if pattern.lower() in device_kind.lower():
      kind = 'BF16' if dtype == 'bfloat16' else 'TF32'
      return peaks[dtype], f'{source}: {kind} tensor core, dense'
  return None, None


def compiled_cost(compiled) -> tuple[Optional[float], Optional[int]]:
  """(FLOPs, bytes of arguments + outputs + temporaries) of a compiled program, if known."""
  flops = None
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX returns one dict per program.
    analysis = analysis[0] if analysis else None
  if analysis and analysis.get('flops', -1) > 0:
    flops = float(analysis['flops'])
  memory = None
  stats = compiled.memory_analysis()
  if stats is not None:
    memory = int(stats.argument_size_in_bytes + stats.output_size_in_bytes
                 + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  return flops, memory


def peak_memory_bytes(device) -> Optional[int]:
  """The device's peak bytes in use so far, where the backend reports it (not on CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # Backends without memory statistics raise or return None.
    return None
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return int(stats['peak_bytes_in_use'])
