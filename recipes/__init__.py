"""Training recipes: validated YAML configuration, the Composer adapter and the train entry point.

``recipes.config.load_recipe(path, overrides)`` gives a typed :class:`RecipeConfig`;
``recipes.train.train_from_yaml(path, overrides)`` trains it (``vtp train`` on the command line).
The YAML recipes that ship here: tiny-synthetic (CPU demo), simvtp-vitb-webvid10 (the paper's
setting), videomae-vitb (video-only MAE).
"""
