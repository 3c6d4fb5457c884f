"""fde, the Fashion Discovery Engine's library: what the stage scripts at the top of the repo use.

Each module owns one idea (see the README's layout): where artifacts live (artifacts), user errors
(errors) and the command line's habits (cli), atomic files and manifests (files), ids, metrics,
the recommender strategies and their candidate pool, features, the hybrid, the ranking model and
its training and reasons, the visual index, evaluation, launch audiences, scale-out, embedding
(images, pretrained, backbones, chunks, engines) and the sample data's taxonomy and images. A library module
never imports a stage script, and only the embedding modules import torch.
"""

import os

# OpenMP threads (LightGBM's, scikit-learn's) that wait for work sleep rather than spin, unless the user
# chose otherwise: spinning threads on 2 cores that another job also uses starve one another (LightGBM
# on the fashion demo's 250k training rows while another process ran: 0.26-2.0 s a round spinning,
# 0.07-0.15 s sleeping). Each OpenMP runtime reads it when it loads, so it is set before any is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
