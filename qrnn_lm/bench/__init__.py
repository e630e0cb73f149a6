"""Benchmarks: the ForgetMult kernels, the QRNN layer against nn.LSTM, LM training throughput."""
