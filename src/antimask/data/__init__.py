"""Photos to a store of aligned faces: detect, align, store, morph, and the LightningDataModule."""
