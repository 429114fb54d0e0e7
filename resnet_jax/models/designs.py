"""Residual-block designs and shortcut options, as data that one block reads.

A block's residual branch is a chain of convs with BN -> ReLU between consecutive ones;
a design says what else happens, and where (He, Zhang, Ren, Sun, "Identity Mappings in
Deep Residual Networks", ECCV 2016, Fig. 4):

  name            pre          end           post          stem         final
  original        -            BN            ReLU          BN ReLU      -       (a)
  bn_after_add    -            -             BN ReLU       BN ReLU      -       (b)
  relu_before_add -            BN ReLU       -             BN ReLU      -       (c)
  relu_preact     ReLU         BN            -             BN ReLU      ReLU    (d)
  full_preact     BN ReLU      -             -             -            BN ReLU (e)

`pre` acts on the block's input before the first conv (pre-activation), `end` after the
last conv, before the addition, `post` after the addition; `stem` after the network's
first conv and `final` after its last block, before the pooling. Ops are named after
where they sit: the BN after conv i is `bn{i}`, the pre-activation BN `preact_bn`, the BN
after the addition `add_bn`, the network's final BN `post_bn` (Keras Applications'
ResNetV2 names: `_preact_bn`, `_1_bn`, `_2_bn`, `post_bn`). So the original design keeps
the names of the 2015 blocks (conv1, bn1, ..., bn3), on which checkpoints and imported
weights rely.

Shortcut options (He et al. 2015, Table 3; He et al. 2016, Table 1), as data:

  zero_pad        A: identity; where the shape changes, subsample and zero-pad channels
  projection      B: identity; a projection where the shape changes
  projection_all  C: a projection in every block
  conv_all        a 1x1 conv (no BN) in every block (2016, Table 1, Fig. 2e)
  scaled          identity (A where the shape changes), shortcut and branch each x 0.5
                  (2016, Table 1, constant scaling; the 0.5 / 0.5 row that trains)

A projection is a strided 1x1 conv followed by BN in the designs without pre-activation;
in full pre-activation it takes the pre-activated input and has no BN (Keras ResNetV2,
and the 2016 paper's code).
"""
import dataclasses

from resnet_jax.errors import ConfigError

BN, RELU = 'bn', 'relu'  # The ops a design places.


@dataclasses.dataclass(frozen=True)
class BlockDesign:
  """Where BN and ReLU sit in a residual block and around the stack (see the module docstring).

  Attributes:
    name: the design's name.
    pre: ops on the block's input before its first conv.
    end: ops after the branch's last conv, before the addition.
    post: ops after the addition.
    stem: ops after the network's first conv.
    final: ops after the network's last block.
    projection_bn: a projection shortcut is conv -> BN (True) or a bare conv (False).
  """
  name: str
  pre: tuple[str, ...]
  end: tuple[str, ...]
  post: tuple[str, ...]
  stem: tuple[str, ...]
  final: tuple[str, ...]
  projection_bn: bool

  @property
  def preactivation(self) -> bool:
    """True when the branch starts with an activation (the 2016 paper's pre-activation)."""
    return bool(self.pre)

  @property
  def stem_relu(self) -> bool:
    return RELU in self.stem


DESIGNS = {
    'original': BlockDesign('original', pre=(), end=(BN,), post=(RELU,), stem=(BN, RELU),
                            final=(), projection_bn=True),
    'bn_after_add': BlockDesign('bn_after_add', pre=(), end=(), post=(BN, RELU),
                                stem=(BN, RELU), final=(), projection_bn=True),
    'relu_before_add': BlockDesign('relu_before_add', pre=(), end=(BN, RELU), post=(),
                                   stem=(BN, RELU), final=(), projection_bn=True),
    'relu_preact': BlockDesign('relu_preact', pre=(RELU,), end=(BN,), post=(),
                               stem=(BN, RELU), final=(RELU,), projection_bn=True),
    'full_preact': BlockDesign('full_preact', pre=(BN, RELU), end=(), post=(), stem=(),
                               final=(BN, RELU), projection_bn=False),
}
DESIGN_NAMES = tuple(DESIGNS)
# The paper's letters (Fig. 4), for tables and figures.
DESIGN_LABELS = {'original': '(a) original', 'bn_after_add': '(b) BN after addition',
                 'relu_before_add': '(c) ReLU before addition',
                 'relu_preact': '(d) ReLU-only pre-activation',
                 'full_preact': '(e) full pre-activation'}


@dataclasses.dataclass(frozen=True)
class ShortcutOption:
  """What a block's shortcut is (see the module docstring).

  Attributes:
    name: the option's name.
    reshape: where the block changes shape: 'zero_pad' (subsample, zero channels; no
      parameters) or 'projection' (a strided 1x1 conv, with BN as the design says).
    everywhere: None, or what every block's shortcut is, shape change or not:
      'projection' or 'conv' (a 1x1 conv without BN, whatever the design).
    scale: the shortcut and the residual branch are each multiplied by it.
  """
  name: str
  reshape: str
  everywhere: str | None = None
  scale: float = 1.0


SHORTCUT_OPTIONS = {  # In the papers' order: A, B, C, then the 2016 paper's.
    'zero_pad': ShortcutOption('zero_pad', reshape='zero_pad'),
    'projection': ShortcutOption('projection', reshape='projection'),
    'projection_all': ShortcutOption('projection_all', reshape='projection',
                                     everywhere='projection'),
    'conv_all': ShortcutOption('conv_all', reshape='projection', everywhere='conv'),
    'scaled': ShortcutOption('scaled', reshape='zero_pad', scale=0.5),
}
SHORTCUTS = tuple(SHORTCUT_OPTIONS)
# The 2015 paper's letters (Table 3).
SHORTCUT_LABELS = {'zero_pad': 'A', 'projection': 'B', 'projection_all': 'C',
                   'conv_all': '1x1 conv', 'scaled': '0.5 scaling'}


def get_design(design) -> BlockDesign:
  """The BlockDesign for a name, or the BlockDesign itself."""
  if isinstance(design, BlockDesign):
    return design
  if design not in DESIGNS:
    raise ConfigError(f'block design {design!r} is unknown; expected one of {DESIGN_NAMES}')
  return DESIGNS[design]


def get_shortcut(shortcut) -> ShortcutOption:
  """The ShortcutOption for a name, or the ShortcutOption itself."""
  if isinstance(shortcut, ShortcutOption):
    return shortcut
  if shortcut not in SHORTCUT_OPTIONS:
    raise ConfigError(f'shortcut {shortcut!r} is unknown; expected one of {SHORTCUTS}')
  return SHORTCUT_OPTIONS[shortcut]


def shortcut_kind(option: ShortcutOption, design: BlockDesign, in_channels: int,
                  out_channels: int, strides: int, subsample_stride_only: bool = False) -> str:
  """What one block's shortcut does: 'identity', 'zero_pad', 'projection' or 'conv'.

  'projection' is conv -> BN or a bare conv as `design.projection_bn` says; 'conv' is
  always bare. `subsample_stride_only`: where only the resolution changes (channels
  equal), a projection option subsamples instead (Keras ResNetV2's 1x1 max-pool).
  """
  if option.everywhere is not None:
    return 'conv' if option.everywhere == 'conv' or not design.projection_bn else 'projection'
  if strides == 1 and in_channels == out_channels:
    return 'identity'
  if option.reshape == 'zero_pad' or (subsample_stride_only and in_channels == out_channels):
    return 'zero_pad'
  return 'projection' if design.projection_bn else 'conv'
