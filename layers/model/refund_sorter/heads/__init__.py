"""Custom departments, as the runtime uses them: a shop's own classification head on the backbone's pooled
features, the versions of it, which one is active, and the features training will need.

Training is not here: it is the TrainFunction's job (``refund_sorter_training`` in the training layer, with
scikit-learn, never in the model layer); ``refund-sorter train DIR`` runs the same code on a laptop. This
package only applies and keeps what training made.

- :mod:`.model`: a :class:`~.model.Head` (weights, departments, auto-sort threshold, not-a-product gate) and
  the files of a model version; applying it is one matrix product and a softmax (numpy only);
- :mod:`.registry`: versions in S3 under ``models/<version>/`` and the ACTIVE pointer (a DynamoDB item), with
  activate and rollback;
- :mod:`.active`: the pointer as a running function sees it, re-read at most every
  ``head_pointer_ttl_seconds``, so a new version is picked up without a redeploy;
- :mod:`.embeddings`: every classified photo's features, kept compactly (float16) so training never decodes
  a photo twice.
"""

from __future__ import annotations

from refund_sorter.heads.model import Head, HeadError

__all__ = ["Head", "HeadError"]
