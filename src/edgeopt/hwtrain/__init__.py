"""Hardware-aware training: train a model whose channel widths settle where a device budget is met.

``train_to_budget`` relaxes each channel group's width into a softmax over a few choices (FBNetV2's
channel masking) and puts the *expected* latency (from a device profile's predictor, or timing) and
arena of those choices into their loss in ProxylessNAS's form, beside the accuracy each choice loses
(NetAdapt's short-term evaluation) for a classifier, whose weights train at full width; other tasks
train weights and choices together. It then cuts the model to the chosen widths, checks the budget on
the real model and fine-tunes it.
"""

from edgeopt.hwtrain.gated import Budget, HwTrainReport, train_for_device, train_to_budget

__all__ = ["Budget", "HwTrainReport", "train_for_device", "train_to_budget"]
