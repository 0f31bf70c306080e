"""FashionKLIP's multimodal concept knowledge graph: mining (chunker, miner), concept images (prompt retrieval
with MMR), the jsonl folder, per-sample concept matching and evaluation against the synthetic ground truth."""
