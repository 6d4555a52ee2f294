"""Monitoring: the TensorBoard writer and reader, attention pictures, parameter/FLOP accounting,
throughput and progress."""
