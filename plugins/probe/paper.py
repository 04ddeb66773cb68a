"""The paper's own probe figures (Radford, Metz & Chintala 2015), shown beside ours and labelled as such."""
from ganlab import Table

PAPER_TABLES = {
    "cifar10": Table(
        "Paper figures (Radford et al. 2015, Table 1), not measured here: CIFAR-10 accuracy. "
        "Their DCGAN's D was trained on ImageNet-1k at 32x32, not on CIFAR-10",
        ["model", "accuracy, all labels", "accuracy, 400 per class"],
        [["1-layer K-means (Coates & Ng 2011, 4,800 feature maps)", "80.6%", "63.7% (± 0.7)"],
         ["3-layer K-means (learned receptive field)", "82.0%", "70.7% (± 0.7)"],
         ["view-invariant K-means", "81.9%", "72.6% (± 0.7)"],
         ["Exemplar CNN", "84.3%", "77.4% (± 0.2)"],
         ["DCGAN (ours) + L2-SVM (ImageNet-1k D, 28,672 features)", "82.8%", "73.8% (± 0.4)"]]),
    "svhn": Table(
        "Paper figures (Radford et al. 2015, Table 2), not measured here: SVHN test error with 1000 labels "
        "(the paper gives no spread for its DCGAN row, and does not say what data its SVHN GAN was trained on)",
        ["model", "error"],
        [["KNN", "77.93%"], ["TSVM", "66.55%"], ["M1+M2", "36.02%"], ["SWWAE", "23.56%"],
         ["supervised CNN with the same architecture", "28.87% (validation)"],
         ["DCGAN (ours) + L2-SVM", "22.48%"]]),
}
