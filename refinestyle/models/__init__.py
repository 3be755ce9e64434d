"""Model families: the StyleGAN2 generator, the refinement math and token containers."""
