# peerctl alone, for tracker queries from any container on the swarm's
# network, e.g. `docker compose run --rm peerctl files`. Commands that drive a
# peer (fetch, share, status, leave) need that peer's control socket:
# run them with `docker compose exec PEER /peerctl ...` instead.
FROM scratch
COPY bin/peerctl /
USER 65534:65534
ENV HIVE_TRACKER=http://tracker:65001
ENTRYPOINT ["/peerctl"]
