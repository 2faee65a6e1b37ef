"""Schemathesis hooks for scripts/api-fuzz: aim generated requests at the demo account and
its keys, and check that a refused request changes nothing in the store."""

import json
import os
import random
import urllib.request

import schemathesis

BASE = os.environ["NOUVEL_BASE"]
ACCOUNT = os.environ["NOUVEL_ACCOUNT"]
ADMIN = {"Authorization": "Bearer " + os.environ["NOUVEL_ADMIN_TOKEN"]}


def get(path):
    request = urllib.request.Request(BASE + path, headers=ADMIN)
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def snapshot():
    """The demo account and its keys, less what requests using a key change."""
    keys = get(f"/admin/accounts/{ACCOUNT}/keys")["keys"]
    for key in keys:
        for moving in ("usage", "last_used_at", "status"):
            key.pop(moving, None)
    return get(f"/admin/accounts/{ACCOUNT}"), keys


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    # Mostly the demo account and its keys, sometimes what the generator made (404s).
    if path_parameters and random.random() < 0.8:
        if "account_id" in path_parameters:
            path_parameters["account_id"] = ACCOUNT
        if "key_id" in path_parameters:
            keys = get(f"/admin/accounts/{ACCOUNT}/keys")["keys"]
            if keys:
                path_parameters["key_id"] = random.choice(keys)["id"]
    return path_parameters


BEFORE = {}


@schemathesis.hook
def before_call(context, case, kwargs):
    BEFORE[id(case)] = snapshot()


@schemathesis.check
def refused_requests_change_nothing(ctx, response, case):
    before = BEFORE.pop(id(case), None)
    if before is None or response.status_code < 400:
        return None
    after = snapshot()
    if after != before:
        raise AssertionError(
            f"{case.method} {case.path} answered {response.status_code} but changed the store"
        )
    return None
