# hive's tracker as a FROM scratch image. The build context is docker/ with
# the static binaries staged into docker/bin (scripts/compose-demo.sh build);
# nothing is pulled. /peerctl is here for the health check: scratch has no
# shell, so the check runs `/peerctl health 127.0.0.1:65001` in exec form.
FROM scratch
COPY --chown=65534:65534 bin/empty/ /data/
COPY bin/tracker bin/peerctl /
USER 65534:65534
VOLUME ["/data"]
EXPOSE 65001
ENTRYPOINT ["/tracker"]
CMD ["--listen", "0.0.0.0:65001", "--data-dir", "/data"]
