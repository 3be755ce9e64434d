"""Choices that the library validates and the command line offers, apart from the code that needs torch.

``refinestyle --help`` lists them; keeping them here lets it answer without importing torch and diffusers.
"""

# AdaptConfig.layers: which layers a domain refines.
LAYER_MODES = ("all", "convs", "adaptive")
# AdaptConfig.lr_schedule: how the learning rate decays over a run.
LR_SCHEDULES = ("constant", "cosine", "cosine-restart")
# Truncation psi that the app and the command line accept: 0 draws the average face, above 1 exaggerates it.
MAX_TRUNCATION = 1.2
