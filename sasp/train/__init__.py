"""``sasp train``: fine-tune a SegLlava <SEG> model in either arm (SasP off or on) on
transformers' ``Trainer``."""
