"""Monitoring: the TensorBoard writer and reader, attention pictures, parameter/FLOP accounting,
throughput, progress and profiles. Each module is imported by name
(`from transformer.monitoring import accounting`); none is imported here, so importing one
stays cheap."""

__all__ = ['accounting', 'attention', 'attention_plot', 'events', 'op_profile', 'perf',
           'profiler', 'progress', 'writer']
