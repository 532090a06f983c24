# Redis for the replicated swarm (docker-compose.replicas.yml) as a FROM
# scratch image: Debian's redis-server and redis-cli (scripts/install-redis.sh
# installs them on the host) with exactly the shared libraries `ldd` lists,
# staged into docker/bin/redis by scripts/compose-replicas.sh; nothing is
# pulled. No persistence: the catalog is soft state that peers re-register.
FROM scratch
COPY bin/redis/ /
USER 65534:65534
EXPOSE 6379
ENTRYPOINT ["/usr/bin/redis-server"]
CMD ["--bind", "0.0.0.0", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
