"""The per-user reference: the plain, obvious implementations the fast paths are held equal
to. No path serves their output; tests, `profiles chaos`' verdict and the benchmarks' baselines
run them."""
