"""policyhub's running system: APIs, pipelines, CLI, web pages."""

import os

# torch (the embedder) and llama.cpp (Tier-1) share one OpenMP runtime (libgomp), which reads
# OMP_WAIT_POLICY once, when the first of them loads. Left active, llama.cpp's workers spin
# while they wait and starve the embedder and each other on a 2-core host (measured: Tier-1
# answers 2-10x slower, with 20 s timeouts under load); passive waiting costs the embedder
# nothing measurable (single-question encode p50 28.0 vs 30.5 ms). Set here, before anything
# can load either library; an operator's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
