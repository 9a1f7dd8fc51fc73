"""DeepSEA (Zhou & Troyanskaya 2015) as the zoo ships it (DeepSEA/model_architecture.py): torch7-converted,
nn.Threshold as ReLU, Lambda reshapes, ACGT->AGCT recoding inside the model and, for DeepSEA/predict, the
reverse complement concatenated along the batch axis and the two halves averaged. Written for the kipoi-dfim
zoo harness from the zoo entry's facts."""
import torch
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


class ReCodeAlphabet(nn.Module):
    """(N, 4, 1, L) ACGT -> AGCT."""

    def forward(self, x):
        return torch.stack([x[:, i, ...] for i in [0, 2, 1, 3]], dim=1)


class ConcatenateRC(nn.Module):
    """Append the reverse complements along the batch axis (flip alphabet and length axes)."""

    def forward(self, x):
        rc = x
        for dim in (1, 3):
            rc = rc.index_select(dim, torch.arange(x.size(dim) - 1, -1, -1))
        return torch.cat([x, rc], dim=0)


class AverageRC(nn.Module):
    def forward(self, x):
        half = int(x.shape[0] / 2)
        return x[:half] / 2 + x[half:] / 2


def _linear(n_in, n_out):
    return nn.Sequential(Lambda(lambda x: x.view(1, -1) if 1 == len(x.size()) else x), nn.Linear(n_in, n_out))


def _deepsea():
    return nn.Sequential(
        nn.Conv2d(4, 320, (1, 8), (1, 1)), nn.Threshold(0, 1e-06), nn.MaxPool2d((1, 4), (1, 4)), nn.Dropout(0.2),
        nn.Conv2d(320, 480, (1, 8), (1, 1)), nn.Threshold(0, 1e-06), nn.MaxPool2d((1, 4), (1, 4)), nn.Dropout(0.2),
        nn.Conv2d(480, 960, (1, 8), (1, 1)), nn.Threshold(0, 1e-06), nn.Dropout(0.5),
        Lambda(lambda x: x.view(x.size(0), -1)),
        _linear(50880, 925), nn.Threshold(0, 1e-06),
        _linear(925, 919), nn.Sigmoid(),
    )


def get_model():
    return nn.Sequential(ReCodeAlphabet(), _deepsea())


def get_seqpred_model():
    return nn.Sequential(ReCodeAlphabet(), ConcatenateRC(), _deepsea(), AverageRC())


veff_model = get_model()
predict_model = get_seqpred_model()
