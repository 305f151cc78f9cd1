# make            release build of every program (the per-message ones linked with musl
#                 when musl-gcc is installed: scripts/musl-link)
# make install    installs a qmail host (scripts/install): qmail's users and groups,
#                 the programs with qmail's owners and modes (qmail-queue setuid
#                 qmailq), the queue, default control files, systemd units.
#                 PREFIX (default /var/qmail), DESTDIR (packagers), UNITDIR
#                 (default /etc/systemd/system). Run as root; running it twice
#                 changes nothing.
# make test       the whole test suite (same as scripts/test)
PREFIX ?= /var/qmail
UNITDIR ?= /etc/systemd/system

all:
	swift build -c release
	scripts/musl-link release

install: all
	scripts/install --prefix "$(PREFIX)" --unitdir "$(UNITDIR)" $(if $(DESTDIR),--destdir "$(DESTDIR)")

test:
	scripts/test

.PHONY: all install test
