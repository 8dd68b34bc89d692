"""The stage list (:mod:`medflow.pipeline.stages`) and the embedded local runner."""

from medflow.pipeline.stages import COHORT, STAGES, SUBJECT, Stage, get_stage

__all__ = ["COHORT", "STAGES", "SUBJECT", "Stage", "get_stage"]
