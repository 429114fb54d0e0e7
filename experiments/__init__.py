"""The scripts users launch (train.py, predict.py, ...); a package so that tests import them.

configs/ holds ml_collections config files, loaded by path (--config); a config built on
another imports it as `experiments.configs.<name>` (configs/ is a namespace package: no
__init__.py, so that every .py file there is a config).
"""
