"""Kept for the Procfile's `gunicorn -c python:worker.gunicorn_conf`: see worker.infra.gunicorn."""

from worker.infra.gunicorn import access_log_format as access_log_format
from worker.infra.gunicorn import child_exit as child_exit
from worker.infra.gunicorn import control_socket_disable as control_socket_disable
from worker.infra.gunicorn import limit_request_line as limit_request_line
from worker.infra.gunicorn import logger_class as logger_class
from worker.infra.gunicorn import post_worker_init as post_worker_init
