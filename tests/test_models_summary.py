"""The per-layer summary (library) and experiments/summary.py (script)."""
import re

import pytest

from experiments import summary as script
from resnet_jax.models import ConvolutionalBlock, create_model, summarize


@pytest.fixture(scope='module')
def course_summary():
  return summarize(create_model('resnet50', num_classes=6, layout='coursera'),
                   (1, 64, 64, 3))


def test_totals_are_the_course_models(course_summary):
  assert course_summary.total == 23_600_006
  assert course_summary.params == 23_546_886
  assert course_summary.batch_stats == 53_120
  assert course_summary.output_shape == (1, 6)


def test_rows_add_up_and_nest(course_summary):
  rows = course_summary.rows
  top = [r for r in rows if len(r.path) == 1]
  assert [r.path[0] for r in top][:3] == ['stem_conv', 'stem_bn', 'stage1_block1']
  assert top[-1].path == ('head',) and top[-1].total == 2048 * 6 + 6
  assert sum(r.total for r in top) == course_summary.total
  assert len([r for r in top if r.kind in ('ConvolutionalBlock', 'IdentityBlock')]) == 16
  for i, row in enumerate(rows):
    children = [r for r in rows if len(r.path) == 2 and r.path[0] == row.path[0]]
    if len(row.path) == 1 and children:
      assert sum(c.total for c in children) == row.total
      assert rows.index(children[0]) == i + 1  # the block comes before its layers
  stem_bn = rows[1]
  assert (stem_bn.kind, stem_bn.params, stem_bn.batch_stats) == ('BatchNorm', 128, 128)
  assert stem_bn.output_shape == (1, 32, 32, 64)


def test_summarize_works_on_a_block():
  summary = summarize(ConvolutionalBlock((2, 3, 4), strides=2), (2, 5, 5, 3))
  assert summary.output_shape == (2, 3, 3, 4)
  # conv1 1x1 3->2, conv2 3x3 2->3, conv3 1x1 3->4, proj 1x1 3->4, all with biases.
  convs = (3 * 2 + 2) + (9 * 2 * 3 + 3) + (3 * 4 + 4) + (3 * 4 + 4)
  assert summary.params == convs + 2 * (2 + 3 + 4 + 4)
  assert summary.batch_stats == 2 * (2 + 3 + 4 + 4)


def test_script_prints_the_course_table(capsys):
  code = script.main(['--model', 'resnet50', '--layout', 'coursera', '--input', '64',
                      '--num_classes', '6'])
  out = capsys.readouterr().out
  assert code == 0
  assert 'Total params: 23,600,006' in out
  assert 'Trainable params: 23,546,886' in out
  assert 'Non-trainable params: 53,120' in out
  assert re.search(r'stem_conv \(Conv\)\s+\(None, 32, 32, 64\)\s+9,472', out)
  assert re.search(r'stage4_block3 \(IdentityBlock\)\s+\(None, 2, 2, 2048\)', out)
  assert re.search(r'head \(Dense\)\s+\(None, 6\)\s+12,294', out)


def test_script_reports_library_errors(capsys):
  assert script.main(['--model', 'resnet50', '--input', '16']) == 2
  assert 'image_size=16' in capsys.readouterr().err
  assert script.main(['--model', 'resnet51']) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ConfigError: model name 'resnet51'") and err.count('\n') == 1


def test_script_reads_dashes_in_flag_names_and_starts_each_call_from_the_defaults(capsys):
  assert script.main(['--model=cifar_plain20', '--num-classes=4', '--depth=1']) == 0
  assert re.search(r'head \(Dense\)\s+\(None, 4\)', capsys.readouterr().out)
  assert script.main(['--model=cifar_plain20', '--depth=1']) == 0  # 10 classes again.
  assert re.search(r'head \(Dense\)\s+\(None, 10\)', capsys.readouterr().out)


def test_script_rejects_bad_flags_in_one_line(capsys):
  assert script.main(['--num_classes=0']) == 2
  assert capsys.readouterr().err.startswith('error: IllegalFlagValueError: flag --num_classes=0')
  assert script.main(['--no_such_flag=1']) == 2
  assert 'error: UnrecognizedFlagError: ' in capsys.readouterr().err
  assert script.main(['stray']) == 2
  assert capsys.readouterr().err == "error: UsageError: unexpected arguments: ['stray']\n"
