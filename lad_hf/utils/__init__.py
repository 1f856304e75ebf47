"""Small utilities the rest of lad_hf builds on: atomic writes, checkpoints, label checks, seeds, colours."""
