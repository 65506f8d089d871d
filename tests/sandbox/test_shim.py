"""The exec shim's own Landlock ABI table agrees with landlockpy's, for every ABI."""

from __future__ import annotations

import landlockpy
import pytest
from landlockpy.flags import LATEST_ABI

from sandbox import shim


@pytest.mark.parametrize("abi", range(1, LATEST_ABI + 1))
@pytest.mark.parametrize("network", [True, False])
def test_landlock_masks_match_landlockpy(abi: int, network: bool) -> None:
    ll = landlockpy
    m = shim.landlock_masks(abi, network)
    fs_all = ll.fs_for_abi(abi)
    assert m["handled_fs"] == fs_all
    assert m["writable"] == fs_all & ~(ll.AccessFS.MAKE_CHAR | ll.AccessFS.MAKE_BLOCK)
    assert m["handled_net"] == (ll.AccessNet.NONE if network else ll.net_for_abi(abi))
    # Abstract unix sockets are scoped with the network on too (the host's X11, D-Bus).
    scopes = ll.Scope.SIGNAL | ll.Scope.ABSTRACT_UNIX_SOCKET
    assert m["scoped"] == scopes & ll.scope_for_abi(abi)
    assert m["read"] == ll.AccessFS.READ_FILE | ll.AccessFS.READ_DIR | ll.AccessFS.EXECUTE
    assert m["file"] == (ll.AccessFS.EXECUTE | ll.AccessFS.WRITE_FILE | ll.AccessFS.READ_FILE
                         | ll.AccessFS.TRUNCATE | ll.AccessFS.IOCTL_DEV)
    assert m["dev_extra"] == ll.AccessFS.WRITE_FILE | ll.AccessFS.IOCTL_DEV
    assert (abi >= shim.RESTRICT_NO_NEW_PRIVS_ABI) == bool(
        ll.restrict_for_abi(abi) & ll.RestrictFlag.NO_NEW_PRIVS)
    assert ll.RestrictFlag.NO_NEW_PRIVS == shim.RESTRICT_NO_NEW_PRIVS


def test_abi_version_is_the_kernels_as_landlockpy_reads_it() -> None:
    try:
        want = int(landlockpy.abi_version())
    except Exception:  # no Landlock in this kernel: the shim must say 0 too
        want = 0
    assert shim.abi_version() == want
