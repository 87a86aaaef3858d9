"""fkp_helpers: the tested package behind the course *Facial Keypoint Detection with TensorFlow*.

One module per chapter's subject: :mod:`~fkp_helpers.data` (ch. 1), :mod:`~fkp_helpers.viz`
(ch. 2), :mod:`~fkp_helpers.missing` (ch. 3), :mod:`~fkp_helpers.augment` (ch. 4),
:mod:`~fkp_helpers.models` and :mod:`~fkp_helpers.training` (ch. 5), :mod:`~fkp_helpers.evaluate`
(ch. 6), :mod:`~fkp_helpers.photo` (ch. 7), plus :mod:`~fkp_helpers.synthetic` and
:mod:`~fkp_helpers.cli`. Importing the package does not import TensorFlow.
"""

__version__ = "0.1.0"
