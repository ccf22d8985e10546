import pytest
import yaml

from synthloom.errors import GeneratorError, RecipeError
from synthloom.recipe import load_recipe
from synthloom.registry import make_generator


def test_valid_recipe_has_schema_defaults(recipe_factory):
    recipe = load_recipe(recipe_factory())
    assert recipe.shard_size == 12
    assert recipe.on_error == "fail"  # default lives in the schema
    assert recipe.count == {"train": 24, "test": 12}
    assert len(recipe.fingerprint()) == 64


def test_unknown_top_level_key_names_key_and_file(recipe_factory):
    path = recipe_factory(shard_sise=10)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert "unknown key 'shard_sise'" in str(error.value)
    assert str(path) in str(error.value)


def test_unknown_nested_key_names_its_path(recipe_factory):
    path = recipe_factory(generator={"kind": "pointcloud", "parms": {}})
    with pytest.raises(RecipeError, match=r"unknown key 'generator\.parms'"):
        load_recipe(path)


def test_wrong_type_is_reported(recipe_factory):
    with pytest.raises(RecipeError, match=r"'shard_size'.*got 'many'"):
        load_recipe(recipe_factory(shard_size="many"))


def test_missing_required_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "count": {"train": 1}}))
    with pytest.raises(RecipeError, match="missing required key 'generator'"):
        load_recipe(path)


def test_bad_counts_and_names(recipe_factory):
    with pytest.raises(RecipeError, match="positive count"):
        load_recipe(recipe_factory(count={"train": 0}))
    with pytest.raises(RecipeError, match="'name'"):
        load_recipe(recipe_factory(name="../escape"))


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ncount: {train: 3\n")
    with pytest.raises(RecipeError, match=r"broken.yaml: line \d+ is not valid YAML"):
        load_recipe(path)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match=f"^{tmp_path}: is a directory, not a recipe file$"):
        load_recipe(tmp_path)  # issue 29: said "recipe file not found"


@pytest.mark.parametrize("name", ["dätaset-ü", "tiny\n", "-tiny"])
def test_a_folder_name_says_ascii_letters_when_it_means_them(recipe_factory, name):
    """Issue 29: `dätaset-ü` was refused as "must be letters", yet ä is a letter; a final newline passed."""
    with pytest.raises(RecipeError, match="'name': must be ASCII letters, digits, '.', '_', '[+]' or '-'"):
        load_recipe(recipe_factory(name=name))


def test_unknown_generator_and_params():
    with pytest.raises(RecipeError, match="unknown generator 'pointclouds'.*pointcloud"):
        make_generator("pointclouds", {})
    with pytest.raises(GeneratorError, match="unknown generator param 'num_pts'"):
        make_generator("pointcloud", {"num_pts": 10})
    with pytest.raises(GeneratorError, match="'sampler'"):
        make_generator("pointcloud", {"sampler": "grid"})
    with pytest.raises(GeneratorError, match="unknown shape"):
        make_generator("pointcloud", {"shapes": ["cube"]})


def test_a_file_url_output_is_that_folder_not_a_relative_one(recipe_factory, tmp_path):
    recipe = load_recipe(recipe_factory(output=f"file://{tmp_path}/out"))
    assert recipe.output == f"{tmp_path}/out"  # was "file:/..." below the working directory
    assert recipe.version_dir() == tmp_path / "out" / "tiny" / "1.0.0"
    assert load_recipe(recipe_factory(output="s3://bucket/prefix")).output == "s3://bucket/prefix"
