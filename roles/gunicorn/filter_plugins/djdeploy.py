"""Thin Ansible filters over djdeploy's pure modules: the logic and its tests live there."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from djdeploy import adoption, gunicorn_settings, hardening, history, pyliteral, role_inputs, rollout, sizing
from djdeploy.errors import DjdeployError


def _refusing(function):
    def filter_(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except DjdeployError as exc:
            raise AnsibleFilterError(str(exc)) from None

    filter_.__name__ = function.__name__
    return filter_


class FilterModule:
    def filters(self):
        return {
            "djdeploy_check_role_inputs": _refusing(role_inputs.check_role_inputs),
            "djdeploy_adopt": _refusing(adoption.adopt),
            "djdeploy_config_records": adoption.config_records,
            "djdeploy_kept_read_write_paths": _refusing(adoption.kept_read_write_paths),
            "djdeploy_plan": _refusing(sizing.plan),
            "djdeploy_split_overrides": _refusing(gunicorn_settings.split_overrides),
            "djdeploy_unit_params": _refusing(rollout.unit_params),
            "djdeploy_sandbox": _refusing(hardening.sandbox),
            "djdeploy_unit_sandbox": hardening.unit_sandbox,
            "djdeploy_write_paths": _refusing(hardening.write_paths),
            "djdeploy_socket_unit_name": _refusing(rollout.socket_unit_name),
            "djdeploy_socket_activation": rollout.socket_activation,
            "djdeploy_socket_listen_streams": _refusing(rollout.socket_listen_streams),
            "djdeploy_change_kind": _refusing(rollout.change_kind),
            "djdeploy_recovery_kind": rollout.recovery_kind,
            "djdeploy_running_bind": rollout.running_bind,
            "djdeploy_unfinished_run": history.unfinished_run,
            "djdeploy_abandoned_entries": history.abandoned,
            "djdeploy_rollback_target": _refusing(history.rollback_target),
            "djdeploy_expected_settings": history.expected_settings,
            "djdeploy_config_directories_to_remove": history.config_directories_to_remove,
            "djdeploy_history_prunable": _refusing(history.prunable),
            "djdeploy_restart_plan": _refusing(rollout.restart_plan),
            "djdeploy_bridge_plan": _refusing(rollout.bridge_plan),
            "djdeploy_restart_message": _refusing(rollout.restart_message),
            "djdeploy_restart_forecast": _refusing(rollout.restart_forecast),
            "djdeploy_rollout_problems": _refusing(rollout.rollout_problems),
            "djdeploy_rollout_settled": _refusing(rollout.rollout_settled),
            "djdeploy_previous_settings": rollout.previous_settings,
            "djdeploy_verify_targets": _refusing(rollout.verify_targets),
            "djdeploy_health_advice": rollout.health_advice,
            "djdeploy_reused_socket_unit": _refusing(rollout.reused_socket_unit),
            "djdeploy_file_diff": rollout.file_diff,
            "djdeploy_python_literal": pyliteral.python_literal,
            "djdeploy_comment": pyliteral.comment_text,
        }
