"""OverFeat-fast (Sermanet et al. 2013) as de Gusmão et al. 2016 pre-trained it: 5 convs, 3 FCs, 231 px."""

import torch.nn as nn


class OverFeatFast(nn.Module):
    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        c = [max(8, int(n * width)) for n in (96, 256, 512, 1024, 1024)]
        fc = [max(16, int(n * width)) for n in (3072, 4096)]
        self.features = nn.Sequential(
            nn.Conv2d(3, c[0], 11, stride=4), nn.ReLU(inplace=True), nn.MaxPool2d(2),   # 231 -> 56 -> 28
            nn.Conv2d(c[0], c[1], 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),           # 28 -> 24 -> 12
            nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True),                # 12
            nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(inplace=True),                # 12
            nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 12 -> 6
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(c[4] * 6 * 6, fc[0]), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(fc[0], fc[1]), nn.ReLU(inplace=True), nn.Linear(fc[1], num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
