"""fde, the Fashion Discovery Engine's library: what the stage scripts at the top of the repo use.

Each module owns one idea (see the README's layout): where artifacts live (artifacts), user errors
(errors) and the command line's habits (cli), atomic files and manifests (files), ids, metrics,
the recommender strategies and their candidate pool, features, the hybrid, the ranking model and
its training and reasons, the visual index, evaluation, launch audiences, scale-out, embedding
(images, pretrained, backbones, chunks, engines) and the sample data's taxonomy and images. A library module
never imports a stage script, and only the embedding modules import torch.
"""
