# make            release build of every program (the per-message ones linked with musl
#                 when musl-gcc is installed: scripts/musl-link)
# make install PREFIX=/usr/local   installs every program into $(PREFIX)/bin
# make test       the whole test suite (same as scripts/test)
PREFIX ?= /var/qmail
PROGRAMS = qmail-queue qmail-nullqueue queue-fix qmail-inject sendmail qmail-send qmta-send slowq-send drate qmail-local qmail-lspawn qmail-remote qmail-rspawn rrt maildirserial qmail-smtpd qmail-newmrh

all:
	swift build -c release
	scripts/musl-link release

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	for p in $(PROGRAMS); do install -m 0755 .build/release/$$p $(DESTDIR)$(PREFIX)/bin/$$p; done

test:
	scripts/test

.PHONY: all install test
