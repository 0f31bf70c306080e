"""Retrieval methods (LightningModules). Each module's class is referenced by ``class_path`` in configs."""
