"""Basset (Kelley et al. 2016) as the zoo ships it: a torch7 model converted to an nn.Sequential whose reshapes
are Lambda modules around Python lambdas (written for the kipoi-dfim zoo harness from the zoo entry's facts)."""
from functools import reduce

import torch.nn as nn


class LambdaBase(nn.Sequential):
    def __init__(self, fn, *args):
        super().__init__(*args)
        self.lambda_func = fn

    def forward_prepare(self, x):
        outs = [m(x) for m in self._modules.values()]
        return outs if outs else x


class Lambda(LambdaBase):
    def forward(self, x):
        return self.lambda_func(self.forward_prepare(x))


class LambdaReduce(LambdaBase):
    def forward(self, x):
        return reduce(self.lambda_func, self.forward_prepare(x))


def _linear(n_in, n_out):
    # the converter's guard for a 1-D input: data-dependent, so torch.fx cannot trace it
    return nn.Sequential(Lambda(lambda x: x.view(1, -1) if 1 == len(x.size()) else x), nn.Linear(n_in, n_out))


def get_model():
    return nn.Sequential(
        nn.Conv2d(4, 300, (19, 1)), nn.BatchNorm2d(300), nn.ReLU(), nn.MaxPool2d((3, 1), (3, 1)),
        nn.Conv2d(300, 200, (11, 1)), nn.BatchNorm2d(200), nn.ReLU(), nn.MaxPool2d((4, 1), (4, 1)),
        nn.Conv2d(200, 200, (7, 1)), nn.BatchNorm2d(200), nn.ReLU(), nn.MaxPool2d((4, 1), (4, 1)),
        Lambda(lambda x: x.view(x.size(0), -1)),
        _linear(2000, 1000), nn.BatchNorm1d(1000, 1e-05, 0.1, True), nn.ReLU(), nn.Dropout(0.3),
        _linear(1000, 1000), nn.BatchNorm1d(1000, 1e-05, 0.1, True), nn.ReLU(), nn.Dropout(0.3),
        _linear(1000, 164), nn.Sigmoid(),
    )


model = get_model()
