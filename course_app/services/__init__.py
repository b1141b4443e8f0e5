"""Real programs started on free loopback ports and stopped with their parent: redis-server,
nginx, and an app under ``uvicorn --workers N``.

Import the ``start_*`` helpers and their errors from here. This room imports only ``runtime``.
"""

from course_app._exports import lazy_exports

EXPORTS = {
    "child_process": ["free_port", "parent_death_hook", "stop_process_group"],
    "managed_process": ["ManagedProcess"],
    "redis_server": [
        "REDIS_HINT",
        "PoolExhausted",
        "RedisMissing",
        "RedisServer",
        "RedisServerError",
        "redis_binary",
        "redis_client",
        "start_redis",
    ],
    "nginx_proxy": [
        "NGINX_HINT",
        "NginxError",
        "NginxMissing",
        "NginxProxy",
        "nginx_available",
        "running_proxies",
        "start_proxy",
        "stop_all_proxies",
    ],
    "worker_processes": ["WorkerProcesses", "WorkerProcessesError", "start_workers"],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, EXPORTS)
