"""Params of registered parts: a bool is never a number, and cross-key checks read as one plain line."""

from __future__ import annotations

import pytest

from synthloom.errors import GeneratorError, LabelerError


@pytest.mark.parametrize("params, key", [({"epochs": True}, "epochs"), ({"lr_g": False}, "lr_g"),
                                         ({"min_quality": True}, "min_quality")])
def test_a_boolean_is_refused_where_a_generator_takes_a_number(params, key):
    from synthloom.generators.dcgan import DCGAN

    with pytest.raises(GeneratorError, match=rf"dcgan: generator param '{key}': must be a number, not "):
        DCGAN(params)


def test_numbers_and_real_booleans_still_validate():
    from synthloom.generators.dcgan import DCGAN
    from synthloom.generators.pointcloud import PointCloudGenerator

    assert DCGAN({"epochs": 3, "lr_d": 1}).params.epochs == 3
    cloud = PointCloudGenerator({"partial_scan": True, "scale": [0.8, 1.2], "jitter": 0})
    assert cloud.params.partial_scan is True and cloud.params.scale == (0.8, 1.2)
    with pytest.raises(GeneratorError, match="generator param 'jitter': must be a number, not true"):
        PointCloudGenerator({"jitter": True})


def test_a_boolean_is_refused_where_a_labeler_takes_a_number():
    from synthloom.labelers.owlv2 import Owlv2Labeler

    numeric = [name for name, field in Owlv2Labeler.Params.model_fields.items()
               if field.annotation in (float, int)]
    assert numeric, "owlv2 has no plain numeric param any more: pick another labeler"
    with pytest.raises(LabelerError, match=rf"labeler param '{numeric[0]}': must be a number, not true"):
        Owlv2Labeler({"ontology": {"disc": "a disc"}, numeric[0]: True})


def test_a_cross_key_check_is_one_plain_line_without_the_params_dict():
    from synthloom.generators.dcgan import DCGAN

    with pytest.raises(GeneratorError) as error:
        DCGAN({"label_smoothing": 0.1, "loss": "hinge"})
    assert str(error.value) == "dcgan: label_smoothing applies to loss: bce only"
