"""The engine: test-time optimisation of a small CNN with a differentiable clustering head.

Imports only ``unsupervised_seg.core``; never reads or writes files (persistence takes paths or file objects
through torch.save / torch.load only).
"""
