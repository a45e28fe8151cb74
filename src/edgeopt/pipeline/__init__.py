"""Pipeline: passes, recipes, and the resumable run directory."""

from edgeopt.pipeline.passes import PASSES, Pass, PassContext, register_pass
from edgeopt.pipeline.recipe import Recipe, load_recipe, recipe_from_dict
from edgeopt.pipeline.run import run_recipe

__all__ = ["PASSES", "Pass", "PassContext", "Recipe", "load_recipe", "recipe_from_dict", "register_pass", "run_recipe"]
