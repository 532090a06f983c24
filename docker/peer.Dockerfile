# hive's peer daemon as a FROM scratch image, with /peerctl beside it: the
# health check (`/peerctl health`) and every peerctl command run inside the
# container, since the control API is a Unix socket only its user may open
# (/data/.hive/control.sock; HIVE_DIR tells the daemon and peerctl alike). /data, owned
# by the unprivileged user, is the shared directory; a fresh named volume
# mounted there inherits that ownership.
FROM scratch
COPY --chown=65534:65534 bin/empty/ /data/
COPY bin/peer bin/peerctl /
USER 65534:65534
# The daemon and peerctl both read it; the tracker's name on the compose network.
ENV HIVE_TRACKER=http://tracker:65001
ENV HIVE_DIR=/data
VOLUME ["/data"]
EXPOSE 65050
ENTRYPOINT ["/peer"]
CMD ["--listen", "0.0.0.0:65050"]
