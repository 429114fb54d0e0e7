"""resnet_jax.perf: performance measurement of train.py's code.

For experiments/benchmark.py and experiments/peer_benchmark.py (and its peer_workers.py):
- benchmarking: training throughput of train.py's own programs and feed on random data;
- flax_baseline: the plain Flax train step it is compared with;
- hardware: datasheet peaks, XLA's cost of a compiled program, device memory;
- throughput: throughput records as a markdown table and a plot;
- profile: a training step's cost by layer type, each layer timed alone;
- input_throughput: the streaming input pipeline against the machine's decode limit.

Nothing is imported here: the modules pull in the training code and matplotlib.
"""
