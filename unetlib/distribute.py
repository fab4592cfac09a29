"""Where training runs: one device, several devices of one machine, or several machines.

All three use TensorFlow's own engine, ``tf.distribute``; the model, the loss and the training
loop (``model.fit``) stay the same, only the strategy they are built under changes:

* ``none``: TensorFlow's default placement (one GPU if there is one, else the CPU).
* ``mirrored``: :class:`tf.distribute.MirroredStrategy` keeps one copy of the model on every
  visible GPU, splits each global batch between them and averages the gradients. On a machine
  without a GPU it runs on ``UNETLIB_CPU_REPLICAS`` logical CPU devices (default 1), so the
  mechanism can be seen and tested on a laptop (there it adds work rather than speed).
* ``multiworker``: :class:`tf.distribute.MultiWorkerMirroredStrategy`, the same across
  processes, usually one per machine. Each process learns the cluster and its own place in it
  from ``TF_CONFIG`` or, when that is absent, from Slurm's environment
  (:class:`tf.distribute.cluster_resolver.SlurmClusterResolver`).

``batch_size`` stays the batch of one replica: a step trains on ``batch_size × replicas``
slices (the global batch), and an epoch has correspondingly fewer steps. The learning rate is
not changed with it.
"""

from __future__ import annotations

import unetlib.backend  # noqa: F401  (TensorFlow loaded once, quietly)

# isort: split

import json
import logging
import os
from dataclasses import dataclass

import tensorflow as tf

from unetlib.config import DISTRIBUTIONS
from unetlib.errors import DistributeError

__all__ = [
    "MENDED_KERAS_VERSIONS",
    "mends_keras",
    "CPU_REPLICAS_VARIABLE",
    "Placement",
    "cpu_replicas",
    "cluster_resolver",
    "make_placement",
]

logger = logging.getLogger(__name__)

CPU_REPLICAS_VARIABLE = "UNETLIB_CPU_REPLICAS"
"""Environment variable: logical CPU devices ``mirrored`` uses on a machine without a GPU."""


@dataclass(frozen=True)
class Placement:
    """A strategy and the facts about it that training needs.

    Attributes:
        name: ``"none"``, ``"mirrored"`` or ``"multiworker"``.
        strategy: the ``tf.distribute.Strategy`` to build and train the model under.
        workers: processes training together (1 unless ``multiworker``).
        worker_index: this process's place among them, 0 for the chief.
    """

    name: str
    strategy: tf.distribute.Strategy
    workers: int = 1
    worker_index: int = 0

    @property
    def replicas(self) -> int:
        """Model copies training in step, over all workers: the global batch is this × the batch size."""
        return self.strategy.num_replicas_in_sync

    @property
    def is_chief(self) -> bool:
        """True for the one process that writes the run's files."""
        return self.worker_index == 0

    def chief_value(self, value: float) -> float:
        """The chief's ``value``, on every worker. Every worker must call this at the same point
        (it is a collective operation), so that all of them take the same decision from the same
        number, e.g. the time used of a budget, which each worker's own clock measures a little
        differently.

        Args:
            value: this worker's number (only the chief's is used).

        Returns:
            The chief's number (this one, with one worker).
        """
        if self.workers == 1:
            return value

        def from_the_chief():  # global replica 0 is on the chief
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            return tf.where(tf.equal(replica, 0), tf.constant(value, tf.float32), tf.constant(0.0, tf.float32))

        per_replica = self.strategy.run(from_the_chief)
        return float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy())


def cpu_replicas() -> int:
    """The number of logical CPU devices asked for in ``UNETLIB_CPU_REPLICAS`` (default 1).

    Raises:
        DistributeError: the variable is set but not a whole number of at least 1.
    """
    text = os.environ.get(CPU_REPLICAS_VARIABLE, "1")
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise DistributeError(f"{CPU_REPLICAS_VARIABLE}={text!r}: expected a whole number of at least 1")
    return count


def _logical_cpus(count: int) -> list[str]:
    """Split the CPU into ``count`` logical devices (possible only before TensorFlow starts its
    runtime) and return their names."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration()] * count
    if tf.config.get_logical_device_configuration(cpu) != wanted and count > 1:
        try:
            tf.config.set_logical_device_configuration(cpu, wanted)
        except RuntimeError:
            raise DistributeError(
                f"{CPU_REPLICAS_VARIABLE}={count}: TensorFlow has already started in this process with "
                f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s); set the variable before "
                "anything runs on TensorFlow (e.g. in a fresh process: unetlib train --distribute mirrored)"
            ) from None
    return [device.name for device in tf.config.list_logical_devices("CPU")][:count]


def cluster_resolver() -> tf.distribute.cluster_resolver.ClusterResolver:
    """The cluster this process belongs to: from ``TF_CONFIG`` when it is set, else from a
    Slurm job's environment.

    Raises:
        DistributeError: neither is there, or ``TF_CONFIG`` is not valid JSON.
    """
    if "TF_CONFIG" in os.environ:
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as exc:
            raise DistributeError(f"TF_CONFIG is not valid JSON ({exc})") from None
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ:
        return tf.distribute.cluster_resolver.SlurmClusterResolver()
    raise DistributeError(
        "--distribute multiworker needs the cluster: set TF_CONFIG on every worker, "
        "or start the workers with srun inside a Slurm job (see scripts/)"
    )


def _chief_first(resolver) -> tuple[int, int]:
    """(number of workers, this worker's index) with the chief as index 0: the ``chief`` task
    when the cluster names one, else worker 0."""
    spec = resolver.cluster_spec().as_dict()
    tasks = [(job, index) for job in ("chief", "worker") for index in range(len(spec.get(job, [])))]
    return len(tasks), tasks.index((resolver.task_type, resolver.task_id))


def make_placement(name: str) -> Placement:
    """The strategy ``name`` asks for (see the module's description). Create it before anything
    else runs on TensorFlow in this process: both logical CPU devices and the multi-worker
    runtime can only be set up at the start.

    Args:
        name: ``"none"``, ``"mirrored"`` or ``"multiworker"`` (:data:`unetlib.config.DISTRIBUTIONS`).

    Raises:
        DistributeError: an unknown name, a bad ``UNETLIB_CPU_REPLICAS``, or no cluster description
            for ``multiworker``.
    """
    if name == "none":
        return Placement(name, tf.distribute.get_strategy())
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return Placement(name, tf.distribute.MirroredStrategy())
        count = cpu_replicas()
        logger.warning(
            "--distribute mirrored: no GPU is visible, so it runs on %d logical CPU device(s) (%s); for "
            "GPUs install TensorFlow's CUDA build (pip install -e '.[gpu]')",
            count,
            CPU_REPLICAS_VARIABLE,
        )
        return Placement(name, tf.distribute.MirroredStrategy(_logical_cpus(count)))
    if name == "multiworker":
        resolver = cluster_resolver()
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        _mend_keras_multiworker()
        return Placement(name, strategy, *_chief_first(resolver))
    raise DistributeError(f"unknown distribution {name!r}; expected one of {', '.join(DISTRIBUTIONS)}")


MENDED_KERAS_VERSIONS = ("3.15",)
"""Keras releases (major.minor) whose ``model.fit`` the multi-worker mend was tested on."""


def mends_keras(version: str) -> bool:
    """Whether the multi-worker mend applies to this Keras version: one of
    :data:`MENDED_KERAS_VERSIONS`, compared by major and minor release.

    Args:
        version: a Keras version as ``keras.version()`` gives it, e.g. ``"3.15.1"``.
    """
    return ".".join(version.split(".")[:2]) in MENDED_KERAS_VERSIONS


def _mend_keras_multiworker() -> None:
    """Mend two places where Keras 3's ``model.fit`` fails under MultiWorkerMirroredStrategy
    (keras-team/keras#20585, tensorflow/tensorflow#72388), so the kit can use ``fit`` as it is
    rather than a training loop of its own:

    * before the first step, ``fit`` averages a whole (images, labels) batch over the workers
      only to learn its shapes and dtypes, and the strategy cannot reduce a tuple: this
      process's own part of the batch gives the same shapes and dtypes;
    * at each step, a scalar (the loss, a metric) is averaged over axis 0, which a scalar does
      not have: it is averaged as a whole instead.

    Both changes apply only where several workers train; elsewhere Keras runs unchanged. They
    patch private Keras places, so they apply only to the Keras versions they were tested on
    (:data:`MENDED_KERAS_VERSIONS`); any other Keras runs unmended, with a warning.
    ``tests/test_distribute.py`` trains two workers to check that they hold.
    """
    from keras import version as keras_version
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_unetlib_mended", False):
        return
    if not mends_keras(keras_version()):
        logger.warning(
            "--distribute multiworker: the mend of Keras' model.fit for several workers was tested on Keras %s, "
            "not on this Keras %s, so it runs unmended (it may fail at its first step; keras-team/keras#20585)",
            " and ".join(MENDED_KERAS_VERSIONS),
            keras_version(),
        )
        return
    try:
        symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build
        reduce_per_replica = trainer.reduce_per_replica
        multi_worker = trainer._collective_all_reduce_multi_worker
    except AttributeError:  # a Keras built differently: nothing of ours to mend there
        logger.warning(
            "this Keras (%s) lacks the places unetlib mends for multi-worker training; running it as it is",
            keras_version(),
        )
        return

    def local_part(strategy, value):
        return (
            strategy.experimental_local_results(value)[0]
            if isinstance(value, tf.distribute.DistributedValues)
            else value
        )

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not multi_worker(self.distribute_strategy):
            return symbolic_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        return symbolic_build(
            self, data_batch=tree.map_structure(lambda v: local_part(self.distribute_strategy, v), batch)
        )

    def reduce_scalars_whole(values, strategy, reduction):
        if not multi_worker(strategy) or reduction not in ("auto", "mean"):
            return reduce_per_replica(values, strategy, reduction)

        def reduce(value):
            if local_part(strategy, value).shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return reduce_per_replica(value, strategy, reduction)

        return tree.map_structure(reduce, values)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_scalars_whole
    trainer._unetlib_mended = True
