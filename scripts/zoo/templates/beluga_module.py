"""DeepSEA Beluga (Zhou et al. 2018) as the zoo ships it (DeepSEA/beluga/model.py): a Beluga nn.Module around
torch7-converted Sequentials with Lambda reshapes; the zoo's dataloader feeds AGCT one-hot (N, 4, 1, 2000).
Written for the kipoi-dfim zoo harness from the zoo entry's facts."""
from torch import nn


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


class Beluga(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Sequential(
                nn.Conv2d(4, 320, (1, 8)), nn.ReLU(), nn.Conv2d(320, 320, (1, 8)), nn.ReLU(), nn.Dropout(0.2),
                nn.MaxPool2d((1, 4), (1, 4)),
                nn.Conv2d(320, 480, (1, 8)), nn.ReLU(), nn.Conv2d(480, 480, (1, 8)), nn.ReLU(), nn.Dropout(0.2),
                nn.MaxPool2d((1, 4), (1, 4)),
                nn.Conv2d(480, 640, (1, 8)), nn.ReLU(), nn.Conv2d(640, 640, (1, 8)), nn.ReLU(),
            ),
            nn.Sequential(
                nn.Dropout(0.5),
                Lambda(lambda x: x.view(x.size(0), -1)),
                nn.Sequential(Lambda(lambda x: x.view(1, -1) if 1 == len(x.size()) else x), nn.Linear(67840, 2003)),
                nn.ReLU(),
                nn.Sequential(Lambda(lambda x: x.view(1, -1) if 1 == len(x.size()) else x), nn.Linear(2003, 2002)),
            ),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.model(x)
