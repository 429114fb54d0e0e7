"""resnet_jax.models: residual blocks, the ResNet family, plain twins and layouts."""
from resnet_jax.models.blocks import BasicBlock, ConvolutionalBlock, IdentityBlock
from resnet_jax.models.layouts import LAYOUT_NAMES, LAYOUTS, Layout, get_layout
from resnet_jax.models.registry import (
  MODEL_NAMES,
  NAME_GRAMMAR,
  ModelName,
  check_input_size,
  create_model,
  is_model_name,
  parse_model_name,
)
from resnet_jax.models.resnet import (
  Plain18,
  Plain20,
  Plain32,
  Plain34,
  Plain44,
  Plain50,
  Plain56,
  Plain101,
  Plain110,
  Plain152,
  ResNet,
  ResNet18,
  ResNet20,
  ResNet32,
  ResNet34,
  ResNet44,
  ResNet50,
  ResNet56,
  ResNet101,
  ResNet110,
  ResNet152,
)
from resnet_jax.models.summary import LayerRow, Summary, summarize
