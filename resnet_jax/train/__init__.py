"""resnet_jax.train: the training state, optimizers, pmapped steps, checkpoints and the loop."""
from resnet_jax.train.config import base_config, validate_config
from resnet_jax.train.loop import train_and_evaluate
from resnet_jax.train.state import TrainState, create_train_state
from resnet_jax.train.steps import eval_step, train_step

__all__ = ['TrainState', 'base_config', 'create_train_state', 'eval_step', 'train_and_evaluate',
           'train_step', 'validate_config']
