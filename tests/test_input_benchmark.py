"""benchmark.py --input_only: the pipeline's speed, the decode limit and the cores needed,
as one JSON line whose numbers agree with each other."""
import json
import math

import pytest

from experiments import benchmark

pytestmark = pytest.mark.slow  # Starts a pool of decoding processes.


def test_input_only_reports_the_pipeline_against_the_decode_limit(capsys):
  code = benchmark.main(['--input_only', '--input_images=48', '--image_size=32',
                         '--batch_size=8', '--input_batches=2', '--windows=1',
                         '--data_workers=0', '--accelerator_img_per_sec=1000'])
  out, err = capsys.readouterr()
  assert code == 0, err[-2000:]
  record = json.loads(out.strip().splitlines()[-1])
  assert record['mode'] == 'input_only' and record['records'] == 48
  assert record['pipeline_img_per_sec'] > 0 and record['decode_limit_img_per_sec'] > 0
  assert record['fraction_of_limit'] == pytest.approx(
      record['pipeline_img_per_sec'] / record['decode_limit_img_per_sec'])
  assert record['cores_needed'] == math.ceil(1000 / record['pipeline_img_per_sec_per_core'])
  assert len(record['windows']) == 1 and record['images_per_window'] == 16
  assert record['pipeline_cpu_ms_per_image'] > 0 and record['decode_cpu_ms_per_image'] > 0
  assert record['cores_needed_by_cpu_time'] == math.ceil(
      record['pipeline_cpu_ms_per_image'])  # 1000 img/s x ms per image / 1000.
  # The default leaves the resize to the device: canvases for 256-px images, and its cost.
  assert record['crop_resize'] == 'device' and record['canvas_size'] == 343 + 2 * 11
  assert record['device_resize_cpu_ms_per_image'] > 0 and record['device_resize_batch'] == 8
  assert set(record['stage_cpu_ms_per_image']) == {
      'read_record', 'decode_rgb_pillow', 'decode_rgb_direct', 'crop_box_copy_to_canvas',
      'crop_box_resize_flip_on_host'}
  assert 'load_average' in record['windows'][0]
