import os


def worker_pid_header(get_response):
    """Tag every response with the pid that served it, so clients can tell workers apart."""

    def middleware(request):
        response = get_response(request)
        # Looked up per request: under gunicorn this module may be imported before the fork.
        response["X-Demo-Pid"] = str(os.getpid())
        return response

    return middleware
